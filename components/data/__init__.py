"""Datasets: manifest schema, adapters, the synthetic benchmark, decoding."""
