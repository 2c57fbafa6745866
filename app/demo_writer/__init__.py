"""The demo writer: a fake Mistral-compatible vendor served on loopback, so Atelier works without a key."""

from app.demo_writer.app import DemoProfile, create_demo_app

__all__ = ["DemoProfile", "create_demo_app"]
