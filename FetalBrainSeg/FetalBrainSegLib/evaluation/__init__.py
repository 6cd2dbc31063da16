"""Scoring masks against manual ones: metrics, the shared data set's manifest and splits, paired tests."""
