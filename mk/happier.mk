# HAPPIER (hierarchical retrieval): demo, paper tables, published numbers. `make help` lists the targets.
.PHONY: demo-happier test-happier table-happier table-happier-sop table-happier-inat-base table-happier-inat-full \
	table-happier-dyml-vehicle table-happier-dyml-animal table-happier-dyml-product

demo-happier: ## HAPPIER vs ROADMAP on Fashion-MNIST (2 levels): H-AP, ASI, NDCG, R@1 + retrieval grid (~2 min CPU)
	$(PY) -m happier.demo $(ARGS)

test-happier: ## run the HAPPIER tests (losses, relevance cache, DyML / iNat readers, grid)
	$(PY) -m pytest -q tests/happier tests/common/test_datasets_dyml.py tests/common/test_datasets_inat_hierarchy.py \
	  tests/common/test_viz_retrieval_grid.py $(ARGS)
