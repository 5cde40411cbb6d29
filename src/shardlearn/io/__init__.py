"""Model files (JSON + npz, no pickle)."""
