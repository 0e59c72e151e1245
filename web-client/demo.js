// placeholder: the web-client issue fills this in
