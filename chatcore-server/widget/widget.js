// placeholder attachShadow
