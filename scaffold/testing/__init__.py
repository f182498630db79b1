"""Test helpers: tiny offline assets that let real torchtune runs happen on CPU."""
