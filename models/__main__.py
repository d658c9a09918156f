"""`python -m models`: the LIF backend `auto` picks on each device here, and the library versions.

(Not `python -m models.neurons`: the package imports that module first, so runpy would warn.)
"""
from .lif_backends import describe

print(describe())
