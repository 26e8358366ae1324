package codeinterp

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"log/slog"
	"os/exec"
)

// runnerJS is the JavaScript side of the node kernel.
//
//go:embed runner.js
var runnerJS []byte

// nodeKernel is a Node.js process running runner.js: requests go to its
// fd 3, replies come back on fd 4, stdout and stderr are the code's.
type nodeKernel struct {
	*procKernel
	typescript bool
}

type nodeRequest struct {
	ID     int    `json:"id"`
	Code   string `json:"code"`
	TS     bool   `json:"ts,omitempty"`
	Silent bool   `json:"silent,omitempty"`
}

type nodeReply struct {
	ID    int     `json:"id"`
	Value *string `json:"value"`
	Error *struct {
		Name      string `json:"name"`
		Value     string `json:"value"`
		Traceback string `json:"traceback"`
	} `json:"error"`
}

// startNode starts node on the runner script at runner (a file holding
// runnerJS) in cwd.
func startNode(ctx context.Context, node, runner, cwd string, typescript bool, log *slog.Logger) (_ *nodeKernel, err error) {
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(node, "--expose-internals", runner)
	cmd.Dir = cwd
	cmd.Env = kernelEnv("PADDOCK_CODEINTERP_TOKEN=" + token)
	p, r, err := startProc(cmd, token, 3, log)
	if err != nil {
		return nil, err
	}
	k := &nodeKernel{procKernel: p, typescript: typescript}
	p.interruptRequest = func(seq int) []byte { return []byte(fmt.Sprintf("{\"interrupt\":%d}\n", seq)) }
	defer k.end(r)
	defer func() {
		if err != nil {
			k.close(errRemoved)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, procStartTimeout)
	defer cancel()
	if _, err := k.wait(ctx, r); err != nil {
		return nil, k.startFailed("node", err)
	}
	return k, nil
}

// call sends a request and waits for its reply. The execution is
// interrupted when interrupts ends; setup calls give up when ctx ends.
func (k *nodeKernel) call(ctx, interrupts context.Context, req nodeRequest, out func(event)) (nodeReply, error) {
	r := k.begin(out, true)
	defer k.end(r)
	stop := k.guard(interrupts, r)
	defer stop()
	if out != nil {
		k.count++
		out(countEvent(k.count))
	}
	req.ID = r.seq
	line, err := json.Marshal(req)
	if err != nil {
		return nodeReply{}, fmt.Errorf("encode request: %w", err)
	}
	if err := k.send(append(line, '\n')); err != nil {
		return nodeReply{}, err
	}
	raw, err := k.wait(ctx, r)
	if err != nil {
		return nodeReply{}, err
	}
	var rep nodeReply
	if err := json.Unmarshal(raw, &rep); err != nil {
		return nodeReply{}, fmt.Errorf("decode reply: %w", err)
	}
	return rep, nil
}

func (k *nodeKernel) execute(ctx context.Context, code string, out func(event)) error {
	rep, err := k.call(context.Background(), ctx, nodeRequest{Code: code, TS: k.typescript}, out)
	if err != nil {
		return err
	}
	switch {
	case rep.Error != nil:
		out(errorEvent(rep.Error.Name, rep.Error.Value, rep.Error.Traceback))
	case rep.Value != nil:
		out(textResult(*rep.Value))
	}
	return nil
}

func (k *nodeKernel) setup(ctx context.Context, code string) error {
	rep, err := k.call(ctx, context.Background(), nodeRequest{Code: code, Silent: true}, nil)
	if err != nil {
		if ctx.Err() != nil {
			k.close(errStuck)
		}
		return err
	}
	if rep.Error != nil {
		return fmt.Errorf("%s: %s", rep.Error.Name, rep.Error.Value)
	}
	return nil
}

func (k *nodeKernel) setEnvCode(vars map[string]string) string {
	b, _ := json.Marshal(vars)
	return "Object.assign(process.env, " + string(b) + ")"
}

func (k *nodeKernel) unsetEnvCode(keys []string) string {
	b, _ := json.Marshal(keys)
	return "for (const k of " + string(b) + ") delete process.env[k]"
}
