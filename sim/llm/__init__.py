"""Demo data for the department language-model workload: a small base model and corpora."""
