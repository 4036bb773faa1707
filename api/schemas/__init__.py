"""The API's request and response models, by domain, apart from the routes that use them."""
