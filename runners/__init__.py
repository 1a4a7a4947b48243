"""trainplan.runners"""
