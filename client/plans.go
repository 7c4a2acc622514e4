package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"

	"github.com/polyvisor/polyvisor/api"
)

// PlanConsolidate asks for the fewest hosts that hold the estate: the live
// one, or the RVTools workbook when workbook is not nil.
func (c *Client) PlanConsolidate(ctx context.Context, req api.PlanRequest, workbook []byte) (*api.Plan, error) {
	var out api.Plan
	if err := c.plan(ctx, "/v1/plans/consolidate", req, workbook, &out); err != nil {
		return nil, fmt.Errorf("plan consolidation: %w", err)
	}
	return &out, nil
}

// PlanWhatIf asks for the plan of the estate after req.Change.
func (c *Client) PlanWhatIf(ctx context.Context, req api.PlanRequest, workbook []byte) (*api.WhatIf, error) {
	var out api.WhatIf
	if err := c.plan(ctx, "/v1/plans/what-if", req, workbook, &out); err != nil {
		return nil, fmt.Errorf("plan what-if: %w", err)
	}
	return &out, nil
}

// PlanForecast asks when each cluster runs out of CPU or memory.
func (c *Client) PlanForecast(ctx context.Context, req api.PlanRequest, workbook []byte) (*api.Forecast, error) {
	var out api.Forecast
	if err := c.plan(ctx, "/v1/plans/forecast", req, workbook, &out); err != nil {
		return nil, fmt.Errorf("forecast: %w", err)
	}
	return &out, nil
}

func (c *Client) plan(ctx context.Context, path string, req api.PlanRequest, workbook []byte, out any) error {
	if workbook == nil {
		return c.call(ctx, request{method: http.MethodPost, path: path, body: req}, out)
	}
	body, contentType, err := planMultipart(req, workbook)
	if err != nil {
		return err
	}
	return c.call(ctx, request{method: http.MethodPost, path: path, raw: bytes.NewReader(body), size: int64(len(body)), contentType: contentType}, out)
}

// planMultipart puts the request and the workbook in a multipart body.
func planMultipart(req api.PlanRequest, workbook []byte) ([]byte, string, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	reqJSON, err := json.Marshal(req)
	if err != nil {
		return nil, "", fmt.Errorf("encode plan request: %w", err)
	}
	if err := mw.WriteField("request", string(reqJSON)); err != nil {
		return nil, "", fmt.Errorf("write request part: %w", err)
	}
	fw, err := mw.CreateFormFile("rvtools", "rvtools.xlsx")
	if err != nil {
		return nil, "", fmt.Errorf("write workbook part: %w", err)
	}
	if _, err := fw.Write(workbook); err != nil {
		return nil, "", fmt.Errorf("write workbook part: %w", err)
	}
	if err := mw.Close(); err != nil {
		return nil, "", fmt.Errorf("close multipart body: %w", err)
	}
	return buf.Bytes(), mw.FormDataContentType(), nil
}
