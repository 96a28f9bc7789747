"""Shared evaluation: exact retrieval metrics, graded relevance, exact kNN and OOD metrics.

Submodules are imported on use (``from common.metrics.retrieval import evaluate_retrieval``) so that importing
``common.metrics`` stays cheap.
"""
