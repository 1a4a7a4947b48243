"""trainplan.search"""
