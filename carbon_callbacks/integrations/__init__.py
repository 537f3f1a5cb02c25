"""Thin framework adapters. Each one imports its framework lazily and only translates."""
