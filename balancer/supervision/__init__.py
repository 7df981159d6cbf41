"""Keeping processes running: one restart loop for parts, HAProxy and standbys; why they died; when to give up."""
