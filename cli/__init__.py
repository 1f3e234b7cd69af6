"""The ``wkctl`` command line: parse, call :mod:`wkctl.protocol`, render."""
