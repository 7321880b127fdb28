"""What every test folder shares: a real server process, certificates, MNIST images, ports.

tests/conftest.py loads `fixtures` as a plugin; test modules import the helpers by their
package names (`from tests.support.server import ServeProcess`).
"""
