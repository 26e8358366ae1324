// Package api holds the Platform API's wire types and route bindings,
// generated from api/openapi.yaml by oapi-codegen (`make generate`).
package api
