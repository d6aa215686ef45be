"""Reporting: overlay pictures, figures, and HTML pages from templates."""
