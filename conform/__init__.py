"""The conformance kit behind ``wkctl conform``: probes a live node over a
real broker and reports, statement by statement, what it gets right."""
