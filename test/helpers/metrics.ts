/**
 * inboxq's custom metrics read back in a test: an in-memory OpenTelemetry reader registered as the
 * global meter provider for the file (before its tests, removed after them), as Azure Monitor's
 * exporter is in Azure. Cumulative, so a test reads what was counted since the file started.
 */
import { metrics } from '@opentelemetry/api';
import {
  AggregationTemporality,
  type DataPoint,
  MeterProvider,
  MetricReader,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { afterAll, beforeAll } from 'vitest';

class TestReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

/** Registers the file's provider; `points(name)` gives every data point of a metric so far. */
export function useMetricReader(): { points: (name: string) => Promise<DataPoint<unknown>[]> } {
  const reader = new TestReader({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  beforeAll(() => metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] })));
  afterAll(() => metrics.disable());
  return {
    points: async (name) => {
      const { resourceMetrics } = (await reader.collect()) as { resourceMetrics: ResourceMetrics };
      return resourceMetrics.scopeMetrics
        .flatMap((s) => s.metrics)
        .filter((m) => m.descriptor.name === name)
        .flatMap((m) => m.dataPoints as DataPoint<unknown>[]);
    },
  };
}
