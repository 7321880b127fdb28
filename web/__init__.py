"""digitserve.web"""
