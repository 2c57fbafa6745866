"""The collection API: artists as the public sees them, each with a summary of its stored portrait.

It composes the catalog (artists) with the articles (portraits), so that neither knows the other above it.
"""
