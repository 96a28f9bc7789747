"""The bird taxonomy of CUB-200-2011 that gives its 3-level hierarchy: species (the 200 classes), family, order.

Used for the hierarchical (TPAMI SupRank) rows, whose CUB labels are ``[species, family, order]``: the relevance of
one image to another is the number of these levels they share. The partition is the one of the SupRank code's CUB
dataset (13 orders, 38 families; the 100 training species cover all 13 orders and 30 families). The ids below are
numbered by first appearance in class order (class folder ``001`` first); only the partition matters.

``FAMILY[c]`` and ``ORDER[c]`` are the family and order ids of class ``c`` (the 0-based index of its folder).
"""

from __future__ import annotations

# one id per class, classes 0..199 in folder order
_FAMILY = (
    "0 0 0 1 2 2 2 2 3 3 3 3 3 4 4 4 4 5 6 7 8 9 10 10 10 3 3 11 12 12 1 1 1 13 13 14 15 15 15 15 15 15 "
    "15 16 17 18 13 13 3 19 19 19 19 4 13 13 4 2 20 20 20 20 20 20 20 20 21 21 21 21 22 22 12 12 12 8 15 "
    "15 23 23 23 23 23 24 25 26 18 3 18 18 6 9 12 27 3 3 3 3 28 29 29 15 15 30 9 2 12 12 28 1 31 31 8 8 8 "
    "8 8 32 8 8 8 8 8 8 8 8 8 8 8 8 8 8 8 33 34 34 34 34 4 4 20 20 20 20 20 20 20 8 6 6 35 35 35 35 35 35 "
    "35 28 28 28 28 28 28 28 28 28 28 28 28 28 28 28 28 28 28 28 28 28 28 28 28 28 28 28 36 36 14 14 14 "
    "14 14 14 37 37 37 37 37 37 37 28 "
)
_ORDER = (
    "0 0 0 1 2 2 2 2 3 3 3 3 3 3 3 3 3 3 3 3 3 4 5 5 5 3 3 3 3 3 1 1 1 3 3 6 3 3 3 3 3 3 3 5 0 7 3 3 3 8 "
    "8 8 8 3 3 3 3 2 2 2 2 2 2 2 2 2 9 9 9 9 2 2 3 3 3 3 3 3 10 10 10 10 10 10 3 11 7 3 7 7 3 4 3 3 3 3 3 "
    "3 3 12 12 3 3 3 4 2 3 3 3 1 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 2 2 2 2 2 2 "
    "2 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 6 6 6 6 6 6 3 3 3 3 "
    "3 3 3 3 "
)

FAMILY: tuple[int, ...] = tuple(int(v) for v in _FAMILY.split())
ORDER: tuple[int, ...] = tuple(int(v) for v in _ORDER.split())
