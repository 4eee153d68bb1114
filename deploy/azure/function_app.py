"""The Azure Functions entry point (Python v2 programming model): one HTTP function serving DataPulse on every
path, configured from the Function App's app settings (DATAPULSE_TOKEN or DATAPULSE_TOKENS, ...; see README.md).

To serve your own MCP server instead of the demo tools, add its package to requirements.txt and either set the
app setting DATAPULSE_APP=mypackage.server:mcp, or build the app from the object here:

    from mypackage.server import mcp
    app = function_app(server=mcp)

Keep exactly one function app object at module level: the worker refuses a module with two.
"""

from datapulse.azure import function_app

app = function_app()
