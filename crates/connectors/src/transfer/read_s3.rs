//! Reading rows from S3 objects (CSV with a header row, or newline-delimited JSON) in key
//! order, streamed: an object is never held in memory whole.

use aws_sdk_s3::Client;
use ferry_config::Connection;
use ferry_executor::connector::ObjectFormat;
use futures_util::StreamExt as _;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;

use super::{Batch, Problem, Read, Value};
use crate::aws;

/// Starts reading the objects under `prefix` into `sender`.
pub(super) fn spawn(
    connection: Connection,
    bucket: String,
    prefix: String,
    format: ObjectFormat,
    batch_size: usize,
    sender: mpsc::Sender<Read>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Connection::Aws {
            region,
            role_arn,
            endpoint,
        } = &connection
        else {
            let _ = sender
                .send(Read::Failed(
                    format!("a {} connection is not an aws one", connection.kind()).into(),
                ))
                .await;
            return;
        };
        let config = aws::sdk_config(region, role_arn.as_deref(), endpoint.as_deref()).await;
        let client = aws::s3(&config, endpoint.as_deref());
        let mut reader = Reader {
            sender: &sender,
            batch: Vec::with_capacity(batch_size),
            batch_size,
            columns: None,
        };
        let result = reader.read_all(&client, &bucket, &prefix, format).await;
        let result = match result {
            Ok(()) => reader.flush().await.map_err(Problem::from),
            Err(problem) => Err(problem),
        };
        match result {
            Ok(()) => {
                let _ = sender.send(Read::End).await;
            }
            Err(mut problem) => {
                problem.text = ferry_secrets::redact_text(&problem.text);
                let _ = sender.send(Read::Failed(problem)).await;
            }
        }
    })
}

/// A Parquet value: integers, floats, booleans and text as they are; dates, times, decimals,
/// bytes and nested values as their text.
fn parquet_value(field: &parquet::record::Field) -> Value {
    use parquet::record::Field;
    match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => Value::Int((*n).into()),
        Field::Short(n) => Value::Int((*n).into()),
        Field::Int(n) => Value::Int((*n).into()),
        Field::Long(n) => Value::Int(*n),
        Field::UByte(n) => Value::Int((*n).into()),
        Field::UShort(n) => Value::Int((*n).into()),
        Field::UInt(n) => Value::Int((*n).into()),
        Field::ULong(n) => {
            i64::try_from(*n).map_or_else(|_| Value::Text(n.to_string()), Value::Int)
        }
        Field::Float(n) => Value::Float((*n).into()),
        Field::Double(n) => Value::Float(*n),
        Field::Str(text) => Value::Text(text.clone()),
        other => Value::Text(other.to_string().trim_matches('"').to_string()),
    }
}

struct Reader<'a> {
    sender: &'a mpsc::Sender<Read>,
    batch: Batch,
    batch_size: usize,
    /// The columns, once the first object told them.
    columns: Option<Vec<String>>,
}

impl Reader<'_> {
    async fn read_all(
        &mut self,
        client: &Client,
        bucket: &str,
        prefix: &str,
        format: ObjectFormat,
    ) -> Result<(), Problem> {
        let mut keys = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| format!("listing s3://{bucket}/{prefix}: {}", aws::describe(&e)))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string))
                    .filter(|k| !k.ends_with('/')),
            );
        }
        keys.sort();
        if keys.is_empty() {
            return Err(format!("no object under s3://{bucket}/{prefix}").into());
        }
        for key in keys {
            let object = client
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| Problem {
                    text: format!("reading s3://{bucket}/{key}: {}", aws::describe(&e)),
                    transient: aws::is_transient(&e),
                })?;
            match format {
                ObjectFormat::Csv => {
                    let body = tokio::io::BufReader::new(object.body.into_async_read());
                    self.csv(body, bucket, &key).await?;
                }
                ObjectFormat::Ndjson => {
                    let body = tokio::io::BufReader::new(object.body.into_async_read());
                    self.ndjson(body, bucket, &key).await?;
                }
                ObjectFormat::Parquet => self.parquet(object.body, bucket, &key).await?,
            }
        }
        Ok(())
    }

    async fn csv(
        &mut self,
        body: impl tokio::io::AsyncRead + Unpin + Send,
        bucket: &str,
        key: &str,
    ) -> Result<(), String> {
        let mut reader = csv_async::AsyncReader::from_reader(body);
        let header: Vec<String> = reader
            .headers()
            .await
            .map_err(|e| format!("s3://{bucket}/{key}: {e}"))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        self.set_columns(header, bucket, key).await?;
        let mut records = reader.records();
        while let Some(record) = records.next().await {
            let record = record.map_err(|e| format!("s3://{bucket}/{key}: {e}"))?;
            self.push(
                record
                    .iter()
                    .map(|field| Value::Text(field.to_string()))
                    .collect(),
            )
            .await?;
        }
        Ok(())
    }

    async fn ndjson(
        &mut self,
        body: impl tokio::io::AsyncBufRead + Unpin,
        bucket: &str,
        key: &str,
    ) -> Result<(), String> {
        let mut lines = body.lines();
        let mut number = 0;
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| format!("s3://{bucket}/{key}: {e}"))?
        {
            number += 1;
            if line.trim().is_empty() {
                continue;
            }
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&line)
                .map_err(|e| {
                    format!("s3://{bucket}/{key} line {number}: not a JSON object: {e}")
                })?;
            if self.columns.is_none() {
                self.set_columns(object.keys().cloned().collect(), bucket, key)
                    .await?;
            }
            let columns = self.columns.clone().unwrap_or_default();
            if let Some(extra) = object.keys().find(|k| !columns.contains(k)) {
                return Err(format!(
                    "s3://{bucket}/{key} line {number}: field `{extra}` is not among the columns of the first object ({}); declare a `schema`",
                    columns.join(", ")
                ));
            }
            let row = columns
                .iter()
                .map(|column| match object.get(column) {
                    None | Some(serde_json::Value::Null) => Value::Null,
                    Some(serde_json::Value::Bool(b)) => Value::Bool(*b),
                    Some(serde_json::Value::Number(n)) => match n.as_i64() {
                        Some(i) => Value::Int(i),
                        None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
                    },
                    Some(serde_json::Value::String(text)) => Value::Text(text.clone()),
                    Some(nested) => Value::Text(nested.to_string()),
                })
                .collect();
            self.push(row).await?;
        }
        Ok(())
    }

    /// Reads a Parquet object: written to a temporary file first (Parquet is read from its
    /// footer, and the object may be larger than memory), then read row by row beside the
    /// async threads.
    async fn parquet(
        &mut self,
        mut body: aws_sdk_s3::primitives::ByteStream,
        bucket: &str,
        key: &str,
    ) -> Result<(), Problem> {
        use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};
        let place = format!("s3://{bucket}/{key}");
        let spool = tempfile::tempfile().map_err(|e| format!("{place}: a temporary file: {e}"))?;
        let mut spool = tokio::fs::File::from_std(spool);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Problem {
                text: format!("reading {place}: {e}"),
                transient: true,
            })?;
            spool
                .write_all(&chunk)
                .await
                .map_err(|e| format!("{place}: writing a temporary file: {e}"))?;
        }
        spool
            .flush()
            .await
            .map_err(|e| format!("{place}: writing a temporary file: {e}"))?;
        spool
            .rewind()
            .await
            .map_err(|e| format!("{place}: a temporary file: {e}"))?;
        let file = spool.into_std().await;
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(file)
            .map_err(|e| format!("{place}: not a Parquet file: {e}"))?;
        let names: Vec<String> = {
            use parquet::file::reader::FileReader as _;
            reader
                .metadata()
                .file_metadata()
                .schema_descr()
                .root_schema()
                .get_fields()
                .iter()
                .map(|field| field.name().to_string())
                .collect()
        };
        self.set_columns(names.clone(), bucket, key).await?;
        self.flush().await?;
        let sender = self.sender.clone();
        let batch_size = self.batch_size;
        let read = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut batch = Vec::with_capacity(batch_size);
            for row in reader {
                let row = row.map_err(|e| format!("{place}: {e}"))?;
                let mut values = vec![Value::Null; names.len()];
                for (name, field) in row.get_column_iter() {
                    if let Some(index) = names.iter().position(|n| n == name) {
                        values[index] = parquet_value(field);
                    }
                }
                batch.push(values);
                if batch.len() >= batch_size {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                    sender
                        .blocking_send(Read::Rows(full))
                        .map_err(|_| "the writer stopped".to_string())?;
                }
            }
            if !batch.is_empty() {
                sender
                    .blocking_send(Read::Rows(batch))
                    .map_err(|_| "the writer stopped".to_string())?;
            }
            Ok(())
        })
        .await
        .map_err(|e| format!("reading Parquet: {e}"))?;
        read.map_err(Problem::from)
    }

    /// Takes the columns of the first object; a later object must have the same.
    async fn set_columns(
        &mut self,
        columns: Vec<String>,
        bucket: &str,
        key: &str,
    ) -> Result<(), String> {
        match &self.columns {
            None => {
                self.sender
                    .send(Read::Columns(
                        columns.iter().map(|c| (c.clone(), None)).collect(),
                    ))
                    .await
                    .map_err(|_| "the writer stopped".to_string())?;
                self.columns = Some(columns);
                Ok(())
            }
            Some(known) if *known == columns => Ok(()),
            Some(known) => Err(format!(
                "s3://{bucket}/{key} has the columns {}, the objects before it {}",
                columns.join(", "),
                known.join(", ")
            )),
        }
    }

    async fn push(&mut self, row: Vec<Value>) -> Result<(), String> {
        let width = self.columns.as_ref().map_or(0, Vec::len);
        if row.len() != width {
            return Err(format!(
                "a row has {} values for {width} columns",
                row.len()
            ));
        }
        self.batch.push(row);
        if self.batch.len() >= self.batch_size {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), String> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let rows = std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_size));
        self.sender
            .send(Read::Rows(rows))
            .await
            .map_err(|_| "the writer stopped".to_string())
    }
}
