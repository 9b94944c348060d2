package main

import "github.com/conduitmesh/conduit/pkg/version"

func versionString() string { return "conduit-proxy " + version.Version }
