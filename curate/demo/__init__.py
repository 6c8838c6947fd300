"""The built-in demo: a CommonPool in miniature, generated here, served on loopback, curated end to end."""
