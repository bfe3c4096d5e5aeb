"""The study owner's and the CA operator's tools: the ``baton`` command, the AdminService
client, and fetching a run's final model."""
