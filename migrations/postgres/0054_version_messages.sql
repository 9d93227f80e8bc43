-- Workflow versions: the deployer's message (`ork workflow deploy --message`).
ALTER TABLE workflow_versions ADD COLUMN message TEXT NOT NULL DEFAULT '';
CREATE INDEX workflow_versions_by_workflow ON workflow_versions (workflow, created_at);
