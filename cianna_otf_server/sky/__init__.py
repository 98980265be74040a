"""Simulated radio skies and detection quality.

`simulate` makes radio continuum images with their truth catalogues (for tests, demos, training
and the benchmarks); `quality` cross-matches a catalogue with a truth table and scores it. They
are imported as modules (``from cianna_otf_server.sky.simulate import simulate_sky``): each
pulls in astropy and SciPy, which the service's other parts load only when they need them.
"""
