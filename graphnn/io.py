"""Placeholder replaced below."""
def save(g, path): raise NotImplementedError
def load(path): raise NotImplementedError
