"""The JSON Schemas of the protocol, shipped as package data (``*.json``).

Load them through :mod:`wkctl.protocol.validation`; this module only marks
the folder as a package so that ``importlib.resources`` finds the files in
an installed wheel as well as in a checkout.
"""
