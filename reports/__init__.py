"""trainplan.reports"""
