package codeinterp

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Jupyter messaging protocol 5.3 on the wire: a multipart ZeroMQ message
//
//	[routing ids...] "<IDS|MSG>" signature header parent_header metadata content [buffers...]
//
// where signature is the lowercase hex HMAC-SHA256, keyed with the key of
// the connection file, of the four JSON frames that follow it.

const (
	jupyterDelimiter = "<IDS|MSG>"
	jupyterVersion   = "5.3"
)

// jheader is the header of a Jupyter message.
type jheader struct {
	MsgID    string `json:"msg_id"`
	Session  string `json:"session"`
	Username string `json:"username"`
	Date     string `json:"date"`
	MsgType  string `json:"msg_type"`
	Version  string `json:"version"`
}

// jmessage is a received, verified Jupyter message.
type jmessage struct {
	Header   jheader
	ParentID string
	Content  json.RawMessage
}

// signer signs and verifies messages with the connection key.
type signer struct {
	key []byte
}

func (s signer) sign(frames ...[]byte) []byte {
	if len(s.key) == 0 {
		return nil
	}
	mac := hmac.New(sha256.New, s.key)
	for _, f := range frames {
		mac.Write(f)
	}
	sum := mac.Sum(nil)
	out := make([]byte, hex.EncodedLen(len(sum)))
	hex.Encode(out, sum)
	return out
}

// encode builds the frames of a request of type msgType in session.
func (s signer) encode(session, msgType string, content any) (msgID string, frames [][]byte, err error) {
	msgID = uuid.NewString()
	header, err := json.Marshal(jheader{
		MsgID:    msgID,
		Session:  session,
		Username: "paddock",
		Date:     time.Now().UTC().Format(timestampStyle),
		MsgType:  msgType,
		Version:  jupyterVersion,
	})
	if err != nil {
		return "", nil, fmt.Errorf("encode %s header: %w", msgType, err)
	}
	body, err := json.Marshal(content)
	if err != nil {
		return "", nil, fmt.Errorf("encode %s content: %w", msgType, err)
	}
	parent, metadata := []byte("{}"), []byte("{}")
	frames = [][]byte{[]byte(jupyterDelimiter), s.sign(header, parent, metadata, body), header, parent, metadata, body}
	return msgID, frames, nil
}

var errBadSignature = errors.New("bad message signature")

// decode parses and verifies the frames of a received message.
func (s signer) decode(frames [][]byte) (jmessage, error) {
	i := 0
	for i < len(frames) && !bytes.Equal(frames[i], []byte(jupyterDelimiter)) {
		i++
	}
	if len(frames)-i < 6 {
		return jmessage{}, fmt.Errorf("malformed message: %d frames, delimiter at %d", len(frames), i)
	}
	sig, header, parent, metadata, content := frames[i+1], frames[i+2], frames[i+3], frames[i+4], frames[i+5]
	if len(s.key) > 0 && !hmac.Equal(sig, s.sign(header, parent, metadata, content)) {
		return jmessage{}, errBadSignature
	}
	var m jmessage
	if err := json.Unmarshal(header, &m.Header); err != nil {
		return jmessage{}, fmt.Errorf("decode header: %w", err)
	}
	var ph struct {
		MsgID string `json:"msg_id"`
	}
	if err := json.Unmarshal(parent, &ph); err != nil {
		return jmessage{}, fmt.Errorf("decode parent header: %w", err)
	}
	m.ParentID = ph.MsgID
	m.Content = content
	return m, nil
}
