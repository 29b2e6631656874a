-- Connector tasks: the external job an attempt started (a Glue run id, a Step Functions
-- execution ARN, a BigQuery job id), recorded before ferry waits on it, and the attempt's
-- figures (rows written, bytes processed) as a JSON object.
ALTER TABLE attempts ADD COLUMN external_job_id TEXT;
ALTER TABLE attempts ADD COLUMN metrics TEXT;
