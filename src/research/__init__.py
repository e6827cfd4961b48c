"""The research workbench: batch evaluation of parameter sets, parameter search and walk-forward optimisation
(docs/RESEARCH.md). Free of the web and the database: arrays in, metrics out."""
