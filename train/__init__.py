"""digitserve.train"""
