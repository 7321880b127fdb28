"""digitserve.bench"""
