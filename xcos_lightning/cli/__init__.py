"""xcos_lightning.cli"""
