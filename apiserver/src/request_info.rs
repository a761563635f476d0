//! RequestInfo: what a URL asks for (verb, group, version, namespace, resource, subresource, name).
