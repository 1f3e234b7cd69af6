from celeryapp import app

__all__ = ("app",)
