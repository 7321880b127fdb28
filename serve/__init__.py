"""digitserve.serve"""
