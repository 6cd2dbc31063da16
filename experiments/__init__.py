"""Experiments behind the product's choices and figures, apart from the product: each module runs from the
repository root as `python -m experiments.NAME` with the product installed (`pip install -e ".[test]"`), and
writes its results with the command that made them. Not installed with the product."""
