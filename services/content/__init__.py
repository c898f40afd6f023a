"""Content service: headquarters editors author, revise and publish posts."""
