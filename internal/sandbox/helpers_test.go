package sandbox

import (
	"encoding/json"

	"github.com/paddockhq/paddock/internal/store"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func storeOp(col, key string, val []byte) store.Op {
	return store.Op{Collection: col, Key: key, Value: val}
}
