"""`/docs`: the OpenAPI document rendered by Swagger UI, whose files kv serves itself under
DOCS_ASSETS_PATH (from the swagger-ui-bundle-v2 package), so the page works offline."""

OPENAPI_PATH = "/openapi.json"
DOCS_ASSETS_PATH = "/docs/static"

_DOCS_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>kv API</title>
<link rel="stylesheet" href="{DOCS_ASSETS_PATH}/swagger-ui.css">
<link rel="icon" type="image/png" href="{DOCS_ASSETS_PATH}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{DOCS_ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: "{OPENAPI_PATH}",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  validatorUrl: null
}});
</script>
</body>
</html>
"""


def docs_page() -> bytes:
    return _DOCS_PAGE.encode()
