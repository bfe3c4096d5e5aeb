"""The site-node daemon: a hospital's end of Baton; dials out only."""
