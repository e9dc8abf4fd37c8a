"""mii-server-rest: the REST front end of a mii-core deployment (Flask app served by waitress)."""
