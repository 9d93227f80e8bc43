package ork

import (
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// valueToJSON renders a protobuf Value as JSON; a missing value yields nil so
// that the task's input keeps its zero value.
func valueToJSON(v *structpb.Value) ([]byte, error) {
	if v == nil || v.Kind == nil {
		return nil, nil
	}
	return protojson.Marshal(v)
}

// jsonToValue parses JSON into a protobuf Value; empty input is null.
func jsonToValue(data []byte) (*structpb.Value, error) {
	if len(data) == 0 {
		return structpb.NewNullValue(), nil
	}
	v := &structpb.Value{}
	if err := protojson.Unmarshal(data, v); err != nil {
		return nil, err
	}
	return v, nil
}
