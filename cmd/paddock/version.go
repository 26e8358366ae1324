package main

import (
	"fmt"

	"github.com/paddockhq/paddock/internal/envd"
	"github.com/paddockhq/paddock/internal/version"
)

func init() {
	register("version", "print the Paddock version and the envd API level", func(args []string) error {
		fmt.Printf("paddock %s (envd API %s)\n", version.Version, envd.Version)
		return nil
	})
}
