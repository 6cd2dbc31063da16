"""The paper's comparison (Table 1, Figs. 3-5), latency benchmarks, montages and the demo."""
