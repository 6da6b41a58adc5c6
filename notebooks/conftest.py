"""Notebook tests (nbval): every notebook runs as stored, in the seconds-long smoke
profile. The parameters cell of each notebook reads PROTOEF_PROFILE as its default, and
the Jupyter kernel inherits this environment variable from pytest."""
import os

os.environ["PROTOEF_PROFILE"] = "smoke"
