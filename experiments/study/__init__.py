"""The paper's comparison (Table 1, Figs. 3-5): every network of the registry trained with one recipe,
scored, timed and plotted. Run by python -m experiments.comparison."""
