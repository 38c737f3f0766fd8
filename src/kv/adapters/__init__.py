"""Repository adapters: one module per backend, each independent of the others."""
