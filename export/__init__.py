"""digitserve.export"""
